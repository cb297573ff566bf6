"""Test support code (no tests): W&B record readers and test-only callbacks."""
