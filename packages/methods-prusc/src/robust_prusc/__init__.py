"""PruSC and IRM with annotation-free environments (Le, Schlötterer, Seifert), for robust."""
