from dicomd.cli import main

main()
