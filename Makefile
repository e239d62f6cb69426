# roomgate: `make run` starts the gateway, `make test` runs every test. Both install what is missing first.
CARGO ?= cargo
ARGS ?=
BENCH ?=

.PHONY: deps build run test testdata bench fmt clippy

deps:
	@bash scripts/install-deps.sh

build: deps
	$(CARGO) build --release

# The console is at http://localhost:8080/; a demo pull task loops testdata/sample-720p30.mp4 into demo_room.
run: deps
	$(CARGO) run --release -- serve --demo-task $(ARGS)

# Unit tests, then integration tests (real ffmpeg publishers against an in-process gateway).
test: deps
	$(CARGO) build --examples
	$(CARGO) test --all-targets -- --test-threads=2

# End-to-end benchmark (release build, prints JSON): N rooms x M WHEP viewers for T s, RTMP, SRT or WHIP anchors, and
# pull tasks (transcode vs the ffmpeg CLI, passthrough),
# e.g. make bench BENCH="20x5x30 srt:1x1x15 whip:10x5x20 pull:20" (2m:1x100x20: the goals' 2 Mb/s stream)
bench: deps
	$(CARGO) bench --bench e2e -- $(BENCH)

# Regenerate the sample media in testdata/ (needs ffmpeg).
testdata: deps
	bash testdata/make-samples.sh

fmt:
	$(CARGO) fmt

clippy:
	$(CARGO) clippy --all-targets -- -D warnings
