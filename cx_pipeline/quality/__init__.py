"""Quality: QA's inspection results, Z1.4 acceptance sampling, and the return-risk model."""
