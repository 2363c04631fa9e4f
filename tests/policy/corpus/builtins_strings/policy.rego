package corpus.builtins

result := {
	"concat": concat("/", ["openai", "gpt-4o"]),
	"startswith": startswith("gpt-4o-mini", "gpt-4o"),
	"endswith": endswith("gpt-4o-mini", "mini"),
	"contains": [contains("gpt-4o-mini", "4o"), contains("abc", "d")],
	"lower": lower("PII"),
	"upper": upper("pii-Data"),
	"sprintf": sprintf("%v|%v|%v|%v|%d|%s|%.2f%%", [1.5, "s", true, null, 42, "t", 2.5]),
	"split": split("a,b,,c", ","),
	"replace": replace("a-b-c", "-", "/"),
	"trim_space": trim_space("  model \t"),
	"substring": [substring("provider", 0, 3), substring("provider", 3, -1)],
	"indexof": [indexof("gpt-4o", "4"), indexof("gpt-4o", "z")],
	"format_int": [format_int(255, 16), format_int(10.9, 2), format_int(8, 8)],
}
