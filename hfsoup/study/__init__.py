"""The pair study of "When is model souping tasty?": every pairwise soup of a zoo, its similarity, and the report."""
