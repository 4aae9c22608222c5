//! The backfill plan (to be written).
