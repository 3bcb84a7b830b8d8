"""The baselines across runs the method must beat: output ensembles and model soups of finished runs.

Along-run baselines (checkpoint ensemble, SWA, EMA, SWAD) are trainer hooks in droptune.training.along_run.
"""
