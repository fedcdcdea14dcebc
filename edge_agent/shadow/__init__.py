"""Shadow evaluation: a verified candidate runs on a copy of live requests before promotion.

:mod:`gate` is the pure gate grammar and its verdict, :mod:`stats` the pure comparison
figures, :mod:`child` the isolated process the candidate runs in, :mod:`runner` the IO
shell (hook subscriber, bounded queue, worker thread). See docs/update.md#shadow-evaluation.
"""
