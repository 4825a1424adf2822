//! The source tree's shape: no module imports a module that imports it back (directly or through others), and the
//! README's Layout section names every top-level module of `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path (`ops::conv`) of every library source file, with its text up to its unit tests.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = src();
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap().with_extension("");
        let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if parts[0] == "bin" || parts == ["lib"] {
            continue;
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| *p != "mod").collect();
        let text = std::fs::read_to_string(&file).unwrap();
        let code = match text.find("#[cfg(test)]") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        modules.insert(parts.join("::"), code);
    }
    modules
}

/// The longest known module that a path (`a::b::Item`) starts with.
fn resolve(path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| known.contains_key(m))
}

/// Paths after `prefix` in the code: `crate::a::b::{c, d::e}` gives `a::b::c` and `a::b::d::e`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        let base = rest[..end].trim_end_matches(':').to_string();
        if rest[end..].starts_with('{') {
            let inner = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |j| end + j)];
            for item in inner.split(',') {
                let item = item.split(" as ").next().unwrap().trim();
                if !item.is_empty() && item != "self" {
                    out.push(format!("{base}::{item}"));
                }
            }
        }
        out.push(base);
    }
    out
}

fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut edges = BTreeMap::new();
    for (module, code) in &modules {
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut targets: Vec<String> = paths_after(code, "crate::");
        for p in paths_after(code, "super::") {
            targets.push(if parent.is_empty() { p } else { format!("{parent}::{p}") });
        }
        let set: BTreeSet<String> =
            targets.iter().filter_map(|t| resolve(t, &modules)).filter(|t| t != module && !t.is_empty()).collect();
        edges.insert(module.clone(), set);
    }
    edges
}

/// Modules on a cycle of imports (Tarjan's strongly connected components of more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in &s.edges[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().rposition(|x| *x == v).unwrap();
            let component: Vec<String> = s.stack.drain(at..).map(String::from).collect();
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let edges = imports();
    assert!(edges.len() > 30, "the scan found only {} modules", edges.len());
    assert!(edges["gpu_extractor"].contains("extract"), "the scan misses plain imports");
    assert!(edges["cpu::conv"].contains("cpu::hwc"), "the scan misses imports through super::");
    let found = cycles(&edges);
    assert!(found.is_empty(), "import cycles: {found:?}");
    // top-level modules too: a submodule of one may not import from a module that imports from the other
    let mut top: BTreeMap<String, BTreeSet<String>> = edges.keys().map(|m| (top_of(m), BTreeSet::new())).collect();
    for (m, targets) in &edges {
        for t in targets {
            if top_of(t) != top_of(m) {
                top.get_mut(&top_of(m)).unwrap().insert(top_of(t));
            }
        }
    }
    let found = cycles(&top);
    assert!(found.is_empty(), "import cycles between top-level modules: {found:?}");
}

fn top_of(module: &str) -> String {
    module.split("::").next().unwrap().to_string()
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let edges: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
    let found = cycles(&edges);
    assert_eq!(found.len(), 1);
    let mut cycle = found[0].clone();
    cycle.sort();
    assert_eq!(cycle, ["a", "b", "c"]);
}

#[test]
fn readme_layout_names_every_top_level_module() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("## Layout").expect("README has a Layout section");
    let layout = &readme[start..];
    let layout = &layout[..layout[3..].find("\n## ").map_or(layout.len(), |i| i + 3)];
    for entry in std::fs::read_dir(src()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let shown = if name.ends_with(".rs") { format!("`src/{name}`") } else { format!("`src/{name}/") };
        assert!(layout.contains(&shown), "README's Layout section does not name src/{name}");
    }
    // and every src/ path it names exists
    for (i, _) in layout.match_indices("`src/") {
        let path = &layout[i + 1..];
        let path = &path[..path.find('`').unwrap()];
        let path = path.split(['<', ' ']).next().unwrap();
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(path).exists(), "README's Layout names {path}, which does not exist");
    }
}
