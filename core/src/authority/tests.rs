//! Tests of the authority log.
