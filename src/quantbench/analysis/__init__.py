"""Results in, typed sections out, no printing: summaries over repeats (stats.py), intervals
and paired tests (intervals.py), the recommendation (recommend.py), the article's claims
(article.py). The report and the terminal views read these."""
