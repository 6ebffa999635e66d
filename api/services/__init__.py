"""Service functions: the API's logic, taking a keyword-only session and the caller's tenant."""
