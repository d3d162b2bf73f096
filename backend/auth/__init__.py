"""Users, API tokens, sign-in and the role table."""
