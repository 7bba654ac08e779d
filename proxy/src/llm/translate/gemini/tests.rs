//! Gemini translator tests.
