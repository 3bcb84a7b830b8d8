"""The run folder contract: which files a run (or a combination of runs) holds, and the schema of its results.

Free of torch and of the training code, so that reading run folders (`droptune report`) stays light.
"""
