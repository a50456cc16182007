"""Built-in validators: JSON Schema, Python syntax, regex, length, numeric, agreement."""
