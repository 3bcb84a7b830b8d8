"""The baselines the method must beat: output ensembles, weight averages (SWA, EMA, SWAD) and model soups."""
