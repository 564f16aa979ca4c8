"""Networks: the registry, networks trained from scratch, pretrained musicnn and its weights."""
