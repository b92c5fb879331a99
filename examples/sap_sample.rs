//! Writes a sample SAP IS-H bundle (the generator the tests use) for operators and
//! fuzz seeds:  cargo run --example sap_sample -- OUT.zip [PATIENTS]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    std::fs::write(&args[1], lxgate::boundary::sap::sample::bundle(n)).expect("write the zip");
}
