"""Logger plugins: lifecycle-hook implementations that record runs elsewhere."""
