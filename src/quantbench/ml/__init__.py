"""The machine-learning side: reading and splitting photos (data.py, preprocess.py), building,
loading and training Keras models (model.py, loader.py, train.py, the Keras 3 bridge), and the
training that model transforms run (qat.py, compress.py)."""
