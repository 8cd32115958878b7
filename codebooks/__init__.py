"""Code-set database: ICD-10-CM, CPT, HCPCS and Medicare Code Editor edits, versioned by effective date."""
