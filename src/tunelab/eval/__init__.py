"""Before/after evaluation of a run and its self-contained HTML report."""
