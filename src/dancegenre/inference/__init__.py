"""Using a model: the Classifier, evaluation, sorting, embeddings and tags."""
