"""Why it works: the paper's analyses as tools on finished run folders (`droptune analyze`).

features       which pre-trained features a run's head uses, and accuracy with only the top k kept
linearity      the fine-tuned network against its first-order Taylor model around the pre-trained weights
interpolation  accuracy along straight lines in weight space (pre-trained → fine-tuned, run → run)
"""
