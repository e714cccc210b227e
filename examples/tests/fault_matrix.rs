//! The kill -9 fault matrix (feature `failpoints`): filled in by the next commit.
