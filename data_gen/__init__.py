"""Build the dataset: scraped allowed listings, synthetic disallowed listings, hard negatives."""
