"""Group discovery for robust: clustering of a trained model's features into inferred groups (robust discover) and the dataset.groups option that uses them."""
