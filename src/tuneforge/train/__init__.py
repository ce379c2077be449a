"""Training: one readable recipe per method, and the small parts they share."""
