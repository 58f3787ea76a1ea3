//! JUnit XML for CI systems that show test results.

use std::path::Path;

use super::case::CaseResult;

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c if c.is_control() && c != '\n' && c != '\t' => " ".into(),
            c => c.to_string(),
        })
        .collect()
}

/// Writes one `<testsuite>` per case file.
pub fn write(path: &Path, results: &[CaseResult]) -> std::io::Result<()> {
    let mut files: Vec<&str> = results.iter().map(|r| r.file.as_str()).collect();
    files.dedup();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for file in files {
        let cases: Vec<&CaseResult> = results.iter().filter(|r| r.file == file).collect();
        let failures = cases.iter().filter(|c| !c.failures.is_empty()).count();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
            escape(file),
            cases.len()
        ));
        for case in cases {
            let seconds = case.micros as f64 / 1e6;
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{seconds:.6}\"",
                escape(file),
                escape(&case.name)
            ));
            if case.failures.is_empty() {
                xml.push_str("/>\n");
            } else {
                let text = case.failures.join("\n");
                xml.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    escape(&case.failures[0]),
                    escape(&text)
                ));
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    std::fs::write(path, xml)
}
