"""Guideline logic (ICD-10-CM Official Guidelines): specificity, combination codes, status and history
codes, seventh characters, Excludes1. Parameters live in nlp/resources/rules.json."""
