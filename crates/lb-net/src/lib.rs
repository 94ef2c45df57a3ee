//! lb-net: the tokio proxy (see its issue).
