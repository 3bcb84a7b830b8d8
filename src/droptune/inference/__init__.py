"""Using a trained model: load it back, score it on any dataset."""
