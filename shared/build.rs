// `sqlx::migrate!` embeds the migration files at compile time; without this a changed
// migration would not trigger a rebuild and the binary would carry stale SQL.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
