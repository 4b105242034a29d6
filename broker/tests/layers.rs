//! The layer rules of ARCHITECTURE.md ("Layers") hold in the code: which workspace crates a
//! crate may depend on, which broker modules a broker module may import, and that only
//! `shardlog-runtime` names glommio. The two tables in ARCHITECTURE.md are the rules; this test
//! reads them, so a rule changes in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The rows of the markdown table whose header's first cell is `first_header`, as
/// (first cell, names in the second cell), in order. Names are the `code` spans.
fn table(doc: &str, first_header: &str) -> Vec<(String, Vec<String>)> {
    let header = format!("| {first_header} |");
    let start = doc
        .lines()
        .position(|l| l.starts_with(&header))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no table headed {header:?}"));
    let code = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    doc.lines()
        .skip(start + 2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').collect();
            assert_eq!(cells.len(), 2, "a layer row has two cells: {l}");
            let name = code(cells[0]);
            assert_eq!(name.len(), 1, "one name per row: {l}");
            (name[0].clone(), code(cells[1]))
        })
        .collect()
}

/// Checks that every allowed name is in a row above (so the rules have no cycle) and returns
/// the rules as a map.
fn rules(rows: Vec<(String, Vec<String>)>) -> BTreeMap<String, BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (name, allowed) in rows {
        for a in &allowed {
            assert!(
                seen.contains(a),
                "ARCHITECTURE.md, Layers: `{name}` may use `{a}`, which is not in a row above it"
            );
        }
        seen.insert(name.clone());
        assert!(
            out.insert(name.clone(), allowed.into_iter().collect())
                .is_none(),
            "`{name}` has two rows"
        );
    }
    out
}

fn architecture() -> String {
    std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source without comments (line comments and doc comments; this code base has no block
/// comments), so that prose naming a module is not taken for a use of it.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source file");
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string literal ("http://...") keeps the line whole.
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names `prefix::<name>` used in `code`.
fn uses_of(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The workspace members and the workspace crates each depends on (normal dependencies).
fn crate_dependencies() -> BTreeMap<String, (PathBuf, BTreeSet<String>)> {
    let root = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("root Cargo.toml");
    let members = root
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let mut out = BTreeMap::new();
    for dir in members.split('"').skip(1).step_by(2) {
        let manifest = std::fs::read_to_string(workspace().join(dir).join("Cargo.toml"))
            .expect("member Cargo.toml");
        let mut name = None;
        let mut deps = BTreeSet::new();
        let mut section = String::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let key = line.split('=').next().unwrap_or("").trim();
            // `name.workspace = true` names the dependency `name`.
            let key = key.strip_suffix(".workspace").unwrap_or(key);
            if section == "[package]" && key == "name" {
                name = line.split('"').nth(1).map(str::to_string);
            }
            if section == "[dependencies]" && (key.starts_with("shardlog-") || key == "glommio") {
                deps.insert(key.to_string());
            }
        }
        let name = name.unwrap_or_else(|| panic!("{dir}/Cargo.toml has no package name"));
        out.insert(name, (workspace().join(dir), deps));
    }
    out
}

#[test]
fn crates_depend_only_on_what_their_layer_allows() {
    let rules = rules(table(&architecture(), "crate"));
    for (name, (_, deps)) in crate_dependencies() {
        let allowed = rules
            .get(&name)
            .unwrap_or_else(|| panic!("crate {name} has no row in ARCHITECTURE.md, Layers"));
        for d in deps {
            if d == "glommio" {
                assert_eq!(
                    name, "shardlog-runtime",
                    "only shardlog-runtime may depend on glommio"
                );
                continue;
            }
            assert!(
                allowed.contains(&d),
                "crate {name} depends on {d}, which its row in ARCHITECTURE.md, Layers does not \
                 allow"
            );
        }
    }
}

#[test]
fn only_the_runtime_crate_names_glommio() {
    for (name, (dir, _)) in crate_dependencies() {
        if name == "shardlog-runtime" {
            continue;
        }
        let mut files = Vec::new();
        for sub in ["src", "tests", "benches"] {
            if dir.join(sub).is_dir() {
                rust_files(&dir.join(sub), &mut files);
            }
        }
        for f in files {
            let code = code_of(&f);
            assert!(
                uses_of(&code, "glommio::").is_empty(),
                "{} names glommio; runtime calls go through shardlog-runtime",
                f.display()
            );
        }
    }
}

#[test]
fn broker_modules_import_only_what_their_layer_allows() {
    let rules = rules(table(&architecture(), "broker module"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // The modules lib.rs declares are exactly the table's rows.
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let ruled: BTreeSet<String> = rules.keys().cloned().collect();
    assert_eq!(
        declared, ruled,
        "the modules of broker/src/lib.rs and the rows of ARCHITECTURE.md, Layers differ"
    );
    let mut checked = 0;
    for module in &declared {
        let mut files = Vec::new();
        if src.join(module).is_dir() {
            rust_files(&src.join(module), &mut files);
        } else {
            files.push(src.join(format!("{module}.rs")));
        }
        for f in files {
            for used in uses_of(&code_of(&f), "crate::") {
                assert!(
                    used == *module || rules[module].contains(&used),
                    "{} ({module}) imports crate::{used}, which ARCHITECTURE.md, Layers does not \
                     allow for {module}",
                    f.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 40,
        "only {checked} files checked: the walk is broken"
    );
}

#[test]
fn the_checker_sees_uses_and_skips_prose() {
    let code = "use crate::shard::Shard; // crate::server is named in prose\n\
                let x = crate::runtime::rt::sleep(d); let u = \"http://crate::fake\";";
    let f = std::env::temp_dir().join(format!("layers-{}.rs", std::process::id()));
    std::fs::write(&f, code).expect("write sample");
    let uses = uses_of(&code_of(&f), "crate::");
    std::fs::remove_file(&f).ok();
    assert!(uses.contains("shard") && uses.contains("runtime"));
    assert!(!uses.contains("server"), "a comment is not a use");
    assert!(
        !uses_of("my_crate::x", "crate::").contains("x"),
        "a longer path ending in crate:: is not this crate"
    );
}
