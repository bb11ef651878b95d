//! The compile-time guarantees, proved by their negative space: every write
//! method on a `TidalDb<Follower>` fails to compile with `Writable`'s
//! message, and `Role` cannot be implemented outside the crate.

#[test]
fn compile_fail_cases() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui-tests/*.rs");
}
