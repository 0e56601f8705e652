"""Generated worlds with ground truth, for the notebooks beyond classification (07-10)."""
