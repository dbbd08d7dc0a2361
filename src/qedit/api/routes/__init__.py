"""One router per interface; handlers stay thin (schema -> submit -> view)."""
