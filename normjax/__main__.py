from normjax.cli import main

main()
