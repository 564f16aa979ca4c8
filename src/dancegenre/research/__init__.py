"""Research tools: descriptors, EDA, experiments, explanations, reports."""
