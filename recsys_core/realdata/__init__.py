"""`recsys benchmark`: train on a public dataset within a time budget, write top-K files and a report."""
