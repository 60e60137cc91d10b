"""What the tests share: real brokers and clusters started on free loopback ports, a mock BlueZ,
seeded clinics, the console and a browser, ECG signals, fuzz strategies. Imported as
`tests.support.<module>`; no test module imports another."""
