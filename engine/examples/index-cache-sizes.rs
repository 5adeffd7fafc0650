//! Prints the parts of an index cache as JSON: `index-cache-sizes
//! INDEX_DB` (the `index-*.redb` file; the sorted rows file beside it is
//! found from the database). Used by benches/index-cache.sh. Opening a
//! cache of another version empties it, as any command would.

use arc_engine::index::Index;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: index-cache-sizes INDEX_DB");
        std::process::exit(2);
    };
    match Index::open(std::path::Path::new(&path)).and_then(|i| i.sizes()) {
        Ok(s) => println!("{}", serde_json::to_string(&s).unwrap_or_default()),
        Err(e) => {
            eprintln!("index-cache-sizes: {e}");
            std::process::exit(1);
        }
    }
}
