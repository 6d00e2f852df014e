from safepretrain.cli import main

main()
