from equipment_bridge.cli import main

main()
