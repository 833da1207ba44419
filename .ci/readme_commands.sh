# Sourced by .ci/run, .ci/floor and .ci/precision, from the repository root: sets
# test_command, the README's second set-up command (read from the README so the two cannot
# drift apart; it deselects the tests marked slow), and slow_command, the same with
# -m slow. Exits with 2, naming the script ($1), when the README's line is not such a command.
readme_commands() {
  test_command=$(awk '/^```/{block++; next} block==1' README.md | sed -n 2p)
  case "$test_command" in
    *pytest*) ;;
    *)
      echo "$1: the README's second set-up command does not run pytest: '$test_command'" >&2
      exit 2
      ;;
  esac
  slow_command=${test_command/-m \"not slow\"/-m slow}
  if [ "$slow_command" = "$test_command" ]; then
    echo "$1: the README's test command has no -m \"not slow\" to turn into -m slow" >&2
    exit 2
  fi
}
