"""The Litestar recommendation service: reads the serving manifest, serves from memory."""
