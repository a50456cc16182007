"""First-party qres plugins: predictors."""
