//! Plain aligned columns for listings.

/// Prints `rows` under `headers`, each column as wide as its widest cell.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints the items of a listing page (`{data: [...]}`) under `headers`, one row each.
pub fn print_page(page: &serde_json::Value, headers: &[&str], row: impl Fn(&serde_json::Value) -> Vec<String>) {
    let rows: Vec<Vec<String>> = page["data"].as_array().into_iter().flatten().map(row).collect();
    print(headers, &rows);
}

/// A JSON field as a cell: strings bare, null as `-`.
pub fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
