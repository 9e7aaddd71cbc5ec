package main

// Shell completion. `sidecrypt completion bash|zsh|fish` prints a script
// that asks the binary itself what may come next (`sidecrypt __complete
// WORD...`), so completion never drifts from the commands and flags the
// binary has: the candidates are read from the same help text that
// `--help` prints (the "Commands:" list of a command group, the "Flags:"
// list of a command). Every command prints its help before it opens,
// reads or changes anything, so asking for it is free of side effects.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
)

func cmdCompletion(a *app, args []string) int {
	fs := a.flags("completion", `sidecrypt completion bash|zsh|fish

Prints a shell completion script for sidecrypt's commands, subcommands and
flags. Load it in the current shell, or install it:

  source <(sidecrypt completion bash)         # bash, this shell
  sidecrypt completion bash > /etc/bash_completion.d/sidecrypt
  source <(sidecrypt completion zsh)          # zsh, this shell
  sidecrypt completion zsh > "${fpath[1]}/_sidecrypt"
  sidecrypt completion fish > ~/.config/fish/completions/sidecrypt.fish

The script calls 'sidecrypt __complete' for the candidates, so it always
matches the binary on PATH.`)
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return a.usageError(fs, "name one shell: bash, zsh or fish")
	}
	script, ok := completionScripts[pos[0]]
	if !ok {
		return a.usageError(fs, fmt.Sprintf("unknown shell %q: want bash, zsh or fish", pos[0]))
	}
	fmt.Fprint(a.stdout, script)
	return exitOK
}

var completionScripts = map[string]string{
	// -o default: with no candidate (a flag's value, a positional file)
	// bash completes file names.
	"bash": `# bash completion for sidecrypt: source <(sidecrypt completion bash)
_sidecrypt() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local IFS=$'\n'
    local out
    out=$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return
    COMPREPLY=($(compgen -W "$out" -- "$cur"))
}
complete -o default -F _sidecrypt sidecrypt
`,
	"zsh": `#compdef sidecrypt
# zsh completion for sidecrypt: source <(sidecrypt completion zsh)
_sidecrypt() {
    local -a cands
    cands=(${(f)"$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
    if (( ${#cands} )); then
        compadd -Q -- "${cands[@]}"
    else
        _files
    fi
}
if [[ "${funcstack[1]}" == _sidecrypt ]]; then
    _sidecrypt "$@"
else
    compdef _sidecrypt sidecrypt
fi
`,
	"fish": `# fish completion for sidecrypt: sidecrypt completion fish | source
function __sidecrypt_complete
    set -l words (commandline -opc) (commandline -ct)
    $words[1] __complete $words[2..-1] 2>/dev/null
end
complete -c sidecrypt -f -a '(__sidecrypt_complete)'
`,
}

// cmdComplete answers the completion scripts: args are the words after
// "sidecrypt" up to the cursor, the last one being the word under it
// (possibly empty). It prints the candidates for that word, one a line;
// nothing when a file name or a value fits there, which the scripts then
// complete as files.
func cmdComplete(a *app, args []string) int {
	if len(args) == 0 {
		args = []string{""}
	}
	for _, c := range a.complete(args[:len(args)-1], args[len(args)-1]) {
		fmt.Fprintln(a.stdout, c)
	}
	return exitOK
}

// complete returns the candidates for cur after the words before it.
func (a *app) complete(before []string, cur string) []string {
	path := []string{}
	// Descend through command groups as far as the words name them.
	i := 0
	for ; i < len(before); i++ {
		subs := a.subcommands(path)
		if subs == nil || !contains(subs, before[i]) {
			break
		}
		path = append(path, before[i])
	}
	subs := a.subcommands(path)
	if subs != nil {
		if i == len(before) {
			return withPrefix(subs, cur)
		}
		return nil // an unknown command: nothing to offer
	}
	flags := a.commandFlags(path)
	// The word before the cursor may be a flag that wants a value.
	if i < len(before) {
		if prev := before[len(before)-1]; strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=") {
			for _, f := range flags {
				if f.name == strings.TrimLeft(prev, "-") && f.takesValue {
					return nil
				}
			}
		}
	}
	if !strings.HasPrefix(cur, "-") {
		return nil
	}
	var names []string
	for _, f := range flags {
		dash := "--"
		if len(f.name) == 1 {
			dash = "-"
		}
		names = append(names, dash+f.name)
	}
	return withPrefix(names, cur)
}

// helpOf runs `sidecrypt PATH... --help` with its output captured.
func (a *app) helpOf(path []string) string {
	var out bytes.Buffer
	sub := &app{ctx: a.ctx, stdin: strings.NewReader(""), stdout: &out, stderr: io.Discard, environ: a.environ}
	sub.dispatch("sidecrypt", commands(), append(append([]string{}, path...), "--help"))
	return out.String()
}

// subcommands returns the commands of the group at path, or nil when path
// names a command that is not a group.
func (a *app) subcommands(path []string) []string {
	help := a.helpOf(path)
	if !strings.HasPrefix(help, "Usage: sidecrypt ") || !strings.Contains(help, "\nCommands:\n") {
		return nil
	}
	var names []string
	sc := bufio.NewScanner(strings.NewReader(help[strings.Index(help, "\nCommands:\n")+len("\nCommands:\n"):]))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "  ") {
			break
		}
		if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[0], "__") {
			names = append(names, f[0])
		}
	}
	return names
}

type flagInfo struct {
	name       string
	takesValue bool
}

// commandFlags returns the flags that the help of the command at path
// lists ("  --name type" lines).
func (a *app) commandFlags(path []string) []flagInfo {
	help := a.helpOf(path)
	i := strings.Index(help, "\nFlags:\n")
	if i < 0 {
		return nil
	}
	var out []flagInfo
	sc := bufio.NewScanner(strings.NewReader(help[i+len("\nFlags:\n"):]))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "  -") {
			continue
		}
		f := strings.Fields(line)
		out = append(out, flagInfo{name: strings.TrimLeft(f[0], "-"), takesValue: len(f) > 1})
	}
	return out
}

func withPrefix(words []string, prefix string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, prefix) {
			out = append(out, w)
		}
	}
	return out
}

func contains(words []string, w string) bool {
	for _, x := range words {
		if x == w {
			return true
		}
	}
	return false
}
