from ragbench.cli import main

main()
