//! Reports: human text, JSON, JUnit.
