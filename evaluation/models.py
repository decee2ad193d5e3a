# Validation runs, reports, promotion gates and retraining policies arrive with validation.
