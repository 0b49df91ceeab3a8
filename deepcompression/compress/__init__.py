"""The paper's first two stages: magnitude and unit pruning, k-means weight sharing with centroid
fine-tuning, and the optional distillation both retraining loops can use."""
