//! `pretext-tests`: the workspace's end-to-end tests live in `e2e/` (one test binary, `e2e`,
//! which runs the built `pretext` binary). This library is intentionally empty.
