"""Clinical NLP pipeline: sections, mentions, assertions, candidate codes, guideline rules, evidence."""
